"""slack-agent-bot: an Azure AI Foundry agent in Slack."""

__version__ = "0.1.0"
