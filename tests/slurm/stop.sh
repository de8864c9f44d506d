#!/usr/bin/env bash
# Stops the daemons start.sh started (slurmd, slurmctld, munged).
pkill -x slurmd || true
pkill -x slurmctld || true
pkill -x munged || true
