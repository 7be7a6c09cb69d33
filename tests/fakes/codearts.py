from bot.standins.codearts import *  # noqa: F403  (moved to bot/standins/codearts.py)
