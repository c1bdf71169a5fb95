"""The built-in offline world: a seeded universe (entities) and the corpus, eval bundle and chat data
drawn from it."""
