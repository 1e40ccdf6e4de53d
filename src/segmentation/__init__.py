"""The fully supervised ceiling: a U-Net trained on the pixel masks the CAM methods never see."""
