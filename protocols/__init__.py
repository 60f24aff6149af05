"""Built-in protocol definitions (YAML), shipped inside the wheel as ``meerbench.protocols``."""
