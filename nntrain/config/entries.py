"""Registries of named config entries, and the pydantic unions that validate them.

Layers, losses, metrics, optimizers and callbacks are all written the same way in YAML:
a bare name (`flatten`), a one-key mapping to arguments (`dense: {units: 10}`), or a one-key
mapping to a single positional argument (`dropout: 0.2`). One mechanism validates all five,
so error locations line up with the YAML and every kind gets "did you mean" suggestions.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Tag, create_model


class Strict(BaseModel):
    """A config section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)


class Args(Strict):
    """Arguments of a named entry. `positional` names the field a bare value fills."""

    positional: ClassVar[str | None] = None


class Registry:
    """Names of one kind of entry (layer, loss, ...) mapped to their argument models."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.args: dict[str, type[Args]] = {}
        self.aliases: dict[str, str] = {}

    def register(self, name: str, *aliases: str):
        def decorate(cls: type[Args]) -> type[Args]:
            self.args[name] = cls
            for alias in aliases:
                self.aliases[alias] = name
            return cls

        return decorate

    def canonical(self, name: str) -> str:
        return self.aliases.get(name, name)

    @property
    def names(self) -> list[str]:
        return [*self.args, *self.aliases]

    def entry_type(self) -> Any:
        """The pydantic type of one entry: a union discriminated by the entry's name."""
        members = []
        for name in self.names:
            args_cls = self.args[self.canonical(name)]
            entry = create_model(
                f"{self.kind.title()}_{name}",
                __base__=Strict,
                **{name: (args_cls, ...)},
            )
            members.append(Annotated[entry, Tag(name)])
        def tag_of(value: Any) -> str | None:
            if isinstance(value, dict) and len(value) == 1:
                return next(iter(value))
            if isinstance(value, BaseModel):
                return next(iter(type(value).model_fields))
            return None

        def expand(value: Any) -> Any:
            if isinstance(value, str):
                return {value: {}}
            if isinstance(value, dict) and len(value) == 1:
                (name, args), = value.items()
                cls = self.args.get(self.canonical(name)) if isinstance(name, str) else None
                if args is None:
                    return {name: {}}
                if cls is not None and cls.positional and not isinstance(args, dict):
                    return {name: {cls.positional: args}}
            return value

        return Annotated[
            Union[tuple(members)],  # noqa: UP007 - a runtime-built union
            Discriminator(
                tag_of,
                custom_error_type=f"unknown_{self.kind}",
                custom_error_message=f"expected a {self.kind} name",
            ),
            BeforeValidator(expand),
        ]


def entry_name(entry: BaseModel) -> str:
    """The name an entry was written with (`mse` stays `mse`)."""
    return next(iter(type(entry).model_fields))


def entry_args(entry: BaseModel) -> Args:
    return getattr(entry, entry_name(entry))
