#!/bin/sh
# Stops the canary servers.
{{stop}}
