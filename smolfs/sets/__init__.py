"""NetBSD sets: fetching, caching and streaming them into a tree."""
