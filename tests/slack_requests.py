from bot.standins.slack_requests import *  # noqa: F403  (moved to bot/standins/slack_requests.py)
