"""callmeback's control API: auth, personas, calls, Twilio webhooks, credits, admin."""
