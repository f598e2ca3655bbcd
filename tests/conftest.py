pytest_plugins = ["tests.support.network", "tests.support.jetstream_standin", "tests.support.prefect_server", "tests.support.letta_server", "tests.support.browser", "tests.support.prefect_harness"]
