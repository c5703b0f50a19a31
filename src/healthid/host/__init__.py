"""The untrusted side: ASGI apps and orchestration. Sees ciphertext, pseudonyms and hashes only."""
