"""Media input: loading and validating images and audio from paths, bytes, arrays and PIL images."""
