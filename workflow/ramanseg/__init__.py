"""ramanseg: tumour segmentation of stimulated-Raman (SRS) images, the RamanSeg paper's pipeline."""

__version__ = "0.1.0"
