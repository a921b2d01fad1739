"""The global feed: positions, subscriptions, filters, views, read-your-writes."""
