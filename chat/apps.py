"""App config for chat."""

from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from approvals import notifications
        from chat import messages, notices

        notifications.listen(messages.on_task_event)
        notices.register()
