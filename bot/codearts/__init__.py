"""Huawei Cloud CodeArts Build, the bot's side of it: four parts, imported by name.

* ``bot.codearts.client``: the calls, the transport (one ``httpx.Client``) and the retry
  rules; the only code in the bot that talks to CodeArts.
* ``bot.codearts.auth``: how the bot proves who it is (token, IAM password, AK/SK).
* ``bot.codearts.errors``: the exception tree and what each error tells the user.
* ``bot.codearts.answers``: pydantic models of CodeArts' answers, and how they are read.

``errors`` and ``answers`` import no httpx, so the pure core (``bot.lifecycle``) can use
them without the transport; this file imports nothing.
"""
