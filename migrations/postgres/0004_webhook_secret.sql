-- Each job submitted with a webhook gets its own random secret, checked on delivery.
ALTER TABLE jobs ADD COLUMN webhook_secret TEXT;
