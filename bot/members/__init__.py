"""What belongs to one member wherever they ask: their own defaults (`/prefer`)."""

from bot.members.preferences import MemberPreferences, PreferenceField, Preferences

__all__ = ["MemberPreferences", "PreferenceField", "Preferences"]
