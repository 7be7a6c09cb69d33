from bot.standins.codearts import *  # noqa: F401,F403  (moved to bot/standins/codearts.py)
