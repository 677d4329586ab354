"""Pictures and HTML reports."""

from masksal.report.html import Report
from masksal.report.images import colorize, draw_boxes, overlay, upscale

__all__ = ["Report", "colorize", "draw_boxes", "overlay", "upscale"]
