from bot.standins.slack import *  # noqa: F401,F403  (moved to bot/standins/slack.py)
