"""How well a checkpoint predicts each user's real answer: the likelihood of the reference in the
checkpoint's training format (its training loss on held-out users), and of every option of a
fixed answer set (ratings, questionnaire options)."""
