"""Document filters: one module per rule family, all following `base.DocFilter`."""
