-- A list's subscribers page by profile id (GET /api/v1/resources/{id}/subscribers): the
-- index walks one resource and status in id order, so every page costs its own size.
create index subscriptions_resource_status_profile on subscriptions (resource_id, status, profile_id);
drop index subscriptions_resource;
