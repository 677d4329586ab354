"""Pictures and HTML reports."""

from masksal.report.html import Report
from masksal.report.images import colorize, draw_boxes, overlay, upscale
from masksal.report.markdown import markdown_table

__all__ = ["Report", "colorize", "draw_boxes", "markdown_table", "overlay", "upscale"]
