pytest_plugins = ["tests.support.network", "tests.support.jetstream_standin"]
