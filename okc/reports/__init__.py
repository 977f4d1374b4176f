"""What okc tells a user about its runs and components: curves, summaries, listings."""
