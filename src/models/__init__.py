"""Networks and their training modules: CAM-ready backbones, the SupCon pre-training, the
classifier fine-tuning, and the one reader of weight files (``checkpoints``)."""
