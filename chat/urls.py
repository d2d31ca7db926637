"""Chat endpoints, under /chat/."""

from django.urls import path

from chat import views

urlpatterns = [
    path("slack/interactions/", views.slack_interactions, name="chat-slack-interactions"),
]
