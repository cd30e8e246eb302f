"""diga — DiGA (Distil to Generalize and then Adapt) for domain-adaptive semantic segmentation."""

__version__ = "0.1.0"
