"""The explorer wing: interactive exploration of any video and question (notebooks/explore.ipynb,
docs/explore.md). No study stage imports it."""
