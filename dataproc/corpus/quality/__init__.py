"""Model-based quality filtering: hashed n-gram features, a logistic-regression model, its\ntrainer, and the corpus stage that scores documents with it."""
