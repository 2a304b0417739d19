"""Prompt sets (MusicCaps, prompt files, the demo prompts) and reference sets (audio folders, statistics files)."""
