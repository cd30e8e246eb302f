"""mIoU metrics, multi-scale / sliding-window inference and result tables."""
