"""The paper: transformation sets, joint labels and the N×M table, the heads and backbones, the five losses, the
methods and the inference modes. Imports only `labkit.core`."""
