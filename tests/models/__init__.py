"""Tests of ramanseg.models."""
