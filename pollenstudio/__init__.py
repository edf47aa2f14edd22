"""PollenStudio: review, correct and retrain pollen detections on microscope images."""

__version__ = "0.1.0"
