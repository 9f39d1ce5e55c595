DROP TABLE webhook_lease;
DROP TABLE webhooks;
