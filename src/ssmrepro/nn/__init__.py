"""Model families: SEM-Net, EVSSM and the receptive-field baselines."""
