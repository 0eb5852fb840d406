"""Statistics over a study's trials: the fitted model, effects, ANOVA, best set, claims, diagnostics, seed plan.

Pure functions over DataFrames; nothing here prints, writes or imports torch."""
