"""Images: what a build puts in a root image, and the build itself."""
