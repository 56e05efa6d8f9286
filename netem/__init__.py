"""Link impairment: pure delay/BDP/queue models, impairment profiles, and the shaper."""
