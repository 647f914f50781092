"""Per-document filters and rewriters: one module per rule family, each a `contract.DocStage`."""
