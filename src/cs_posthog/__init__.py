"""cs-posthog: sync a PostHog project into Customerscore."""

__version__ = "0.1.0"
