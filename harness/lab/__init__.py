"""Lab backends' shared parts and the netns backend (metrolab.harness.backends picks one)."""
