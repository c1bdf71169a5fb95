"""Training: the trainer loop and its resumable state, optimizers and schedules, data loaders for
pretraining and chat, the chat stages' shared settings and RL's arithmetic."""
