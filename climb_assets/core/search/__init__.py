"""The mixture search: proxy pool and models, targets, candidates, predictor, rounds."""
