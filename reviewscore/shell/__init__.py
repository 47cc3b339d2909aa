"""The application shell on top of everything: the `reviewscore` command, the process runner
behind `make run` and the embedded Redis it starts."""
