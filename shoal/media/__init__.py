"""Media: where a post's files are, found without fetching anything."""
