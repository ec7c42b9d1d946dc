#!/bin/sh
echo "$CANARYD_SERVICE $CANARYD_REVISION $CANARYD_OUTCOME" >> {{d}}/post-rollout.log
