"""Which model a recipe builds: the one place recipe names are known and dispatched.

- `nanochat-2025-11` (the default): snakechat.model.gpt.GPT, nanochat's November-2025 model. Its
  model_config has no `recipe` key, so its meta.json, resume identity and export stay as they were.
- `nanochat-2026-07`: snakechat.model.gpt2026.GPT2026 (value embeddings, sliding windows, smear,
  backout). Its model_config records `recipe`, so every stage that loads the checkpoint rebuilds
  the same model.

A model_config naming a recipe this code does not know is refused, naming it. The names import no
torch (the config check of `snakemake -n` reads them); the model classes load on first use.
"""

NANOCHAT_2025 = "nanochat-2025-11"
NANOCHAT_2026 = "nanochat-2026-07"
RECIPES = (NANOCHAT_2025, NANOCHAT_2026)
DEFAULT = NANOCHAT_2025
# What transformers' NanoChatForCausalLM cannot express, per recipe (the export refuses these).
NOT_EXPORTABLE = {NANOCHAT_2026: "value embeddings and their gates, sliding-window attention, smear, backout, "
                                 "per-layer residual/x0 scalars, the ×1.2 query/key scale and the padded vocabulary"}


class UnknownRecipe(ValueError):
    pass


def _classes():
    """{recipe: (config class, model class)}."""
    from snakechat.model.gpt import GPT, GPTConfig
    from snakechat.model.gpt2026 import GPT2026, GPT2026Config

    return {NANOCHAT_2025: (GPTConfig, GPT), NANOCHAT_2026: (GPT2026Config, GPT2026)}


def check(recipe, where="recipe"):
    if recipe not in RECIPES:
        raise UnknownRecipe(f"{where}: unknown recipe {recipe!r}; this snakechat knows {', '.join(RECIPES)}")
    return recipe


def recipe_of(model_config, where="model_config"):
    """The recipe a model_config (a dict, as meta.json holds it) was made under."""
    return check(model_config.get("recipe", NANOCHAT_2025), f"{where}['recipe']")


def make_config(recipe, **fields):
    """The config object of `recipe` from the shape fields both recipes share (and, for 2026, window_pattern)."""
    config_class, _ = _classes()[check(recipe)]
    return config_class(**fields)


def config_from_dict(model_config, where="model_config"):
    """A model_config dict (meta.json's) as its recipe's config object."""
    recipe = recipe_of(model_config, where)
    fields = {k: v for k, v in model_config.items() if k != "recipe"}
    config_class, _ = _classes()[recipe]
    try:
        return config_class(**fields) if recipe == NANOCHAT_2025 else config_class(**fields, recipe=recipe)
    except TypeError as e:
        raise ValueError(f"{where} does not describe a {recipe} model: {e}") from None


def build(config):
    """The model of a config object (GPTConfig or GPT2026Config)."""
    recipe = getattr(config, "recipe", NANOCHAT_2025)
    return _classes()[check(recipe)][1](config)


def model_from_dict(model_config, where="model_config"):
    return build(config_from_dict(model_config, where))


def recipe_of_model(model):
    return getattr(model.config, "recipe", NANOCHAT_2025)
