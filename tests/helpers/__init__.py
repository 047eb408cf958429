"""Helpers the tests share: synthetic sets, mirrors and packages, image readers, the
genuine-NetBSD runner."""
