"""Per-document stages: each WARC record on its own, from HTML to a kept or dropped document.

`contract` is what a stage implements, `registry` lists the stages in run order, `runner`
applies them to a batch; `extract` and `filters/` are the stages themselves.
"""
