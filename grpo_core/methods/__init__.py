"""The other rows of the notebook's 'full landscape': DPO (offline and online), PPO's critic, the
KL-placement analysis, and the runner that trains every method side by side on the toy task."""
