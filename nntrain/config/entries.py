"""Registries of named config entries, and the pydantic unions that validate them.

Layers, losses, metrics, optimizers and callbacks are all written the same way in YAML:
a bare name (`flatten`), a one-key mapping to arguments (`dense: {units: 10}`), or a one-key
mapping to a single positional argument (`dropout: 0.2`). One mechanism validates all five,
so error locations line up with the YAML and every kind gets "did you mean" suggestions.
"""

from __future__ import annotations

import functools
import math
import re
import threading
import typing
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    create_model,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError, core_schema

BOOL_FOR_NUMBER = "bool_for_number"  # the error type of `units: yes`


class Strict(BaseModel):
    """A config section: unknown keys are errors, values are validated on assignment, and no
    number is infinite or NaN (`.inf` passes `gt=0`, then fails as training starts; a run's
    saved config from before this rule is let through)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_number(cls, data: Any) -> Any:
        # pydantic reads True as 1 for a number, and YAML reads `units: yes` as True
        for name, value in data.items() if isinstance(data, dict) else ():
            field = cls.model_fields.get(name)
            if field and _holds_bool(value) and _bool_would_be_number(field.annotation):
                raise PydanticCustomError(BOOL_FOR_NUMBER, "a boolean for a number",
                                          {"field": name, "found": value})
        return data

    @field_validator("*", mode="after")
    @classmethod
    def _finite(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, float) and not math.isfinite(value) and not (
                info.context or {}).get("saved"):
            raise ValueError("input should be a finite number")
        return value


def _holds_bool(value: Any) -> bool:
    """A bool, or a list of values with a bool among them (a size per axis)."""
    return isinstance(value, bool) or isinstance(value, list) and any(map(_holds_bool, value))


@functools.cache
def _bool_would_be_number(annotation: Any) -> bool:
    """Whether pydantic would take a bool for a number in a field of this type."""
    return _mentions_number(annotation) and not _takes_bool(annotation)


def _mentions_number(annotation: Any) -> bool:
    return annotation in (int, float) or any(map(_mentions_number,
                                                 typing.get_args(annotation)))


def _takes_bool(annotation: Any) -> bool:
    """Whether a field's type takes a bool anywhere, or values this check leaves to their own
    validation (a mapping, Any). A config section never takes a bare bool."""
    if annotation in (bool, Any, dict):
        return True
    if lazy_entry(annotation) is not None:
        return False  # an entry, `{name: args}`: a config section
    if typing.get_origin(annotation) is Literal:
        return any(isinstance(v, bool) for v in typing.get_args(annotation))
    if typing.get_origin(annotation) is dict:
        return True
    return any(_takes_bool(arg) for arg in typing.get_args(annotation))


class Args(Strict):
    """Arguments of a named entry. `positional` names the field a bare value fills. Its
    validator is built on first use: a config names few of the registered entries."""

    model_config = ConfigDict(defer_build=True)
    positional: ClassVar[str | None] = None


CUSTOM = "custom"
CUSTOM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$")


def is_custom(name: str) -> bool:
    """`package.module:Class` names user code (imported only for names a user wrote)."""
    return bool(CUSTOM_NAME.match(name))


class CustomEntry(Strict):
    """A user's own class, `module:Class: {its arguments}`; arguments are the class's to check."""

    target: Annotated[str, Field(pattern=CUSTOM_NAME.pattern)]
    args: Args

    @model_validator(mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, dict) and len(value) == 1 and "target" not in value:
            (target, args), = value.items()
            return {"target": target, "args": args or {}}
        return value

    @model_serializer(mode="wrap")
    def _join(self, handler: Any) -> Any:
        data = handler(self)  # written back the way a user writes it: {target: args}
        return {data["target"]: data["args"]}


class _BareWhenDefault(Strict):
    """An entry written back as its bare name while its arguments are the defaults
    (`kernel_initializer: glorot_uniform`, not `{glorot_uniform: {}}`)."""

    @model_serializer(mode="wrap")
    def _bare(self, handler: Any) -> Any:
        data = handler(self)
        name = next(iter(type(self).model_fields))
        args = getattr(self, name)
        return name if args == type(args)() else data


class Registry:
    """Names of one kind of entry (layer, loss, ...) mapped to their argument models.
    With `custom_args`, `module:Class` names a user's class taking those (open) arguments.
    With `bare_defaults`, an entry at its defaults is written back as its name alone."""

    def __init__(self, kind: str, custom_args: type[Args] | None = None,
                 bare_defaults: bool = False) -> None:
        self.kind = kind
        self.bare_defaults = bare_defaults
        self.args: dict[str, type[Args]] = {}
        self.aliases: dict[str, str] = {}
        self.custom_args = custom_args
        self._entries: dict[str, type[Strict]] = {}  # by name: each model made once
        self._making = threading.RLock()

    def entry_model(self, name: str) -> type[Strict]:
        """The model of one entry, `{name: args}` (CUSTOM: a user's `module:Class` entry),
        made on first use; under a lock, so that threads validating at once share one model
        (an entry of another model of the same name would not validate again)."""
        with self._making:
            if name in self._entries:
                return self._entries[name]
            model_name = f"{self.kind.title()}_{name}"
            if name == CUSTOM:
                model = create_model(model_name, __base__=CustomEntry, args=(self.custom_args, ...))
            else:
                model = create_model(
                    model_name, __base__=_BareWhenDefault if self.bare_defaults else Strict,
                    **{name: (self.args[self.canonical(name)], ...)})
            self._entries[name] = model
            return model

    def register(self, name: str, *aliases: str):
        def decorate(cls: type[Args]) -> type[Args]:
            self.args[name] = cls
            for alias in aliases:
                self.aliases[alias] = name
            return cls

        return decorate

    def canonical(self, name: str) -> str:
        return self.aliases.get(name, name)

    def spelled(self, name: Any) -> Any:
        """A name as registered: Keras's class names (Adam, SparseCategoricalAccuracy) as
        their snake_case identifiers; anything else as it is, for its error."""
        if isinstance(name, str) and name not in self.args and name not in self.aliases:
            snake = snake_case(name)
            if snake in self.args or snake in self.aliases:
                return snake
        return name

    def is_serialized(self, value: Any) -> bool:
        """Keras's serialized form: {class_name: MaxNorm, config: {max_value: 3}}, with the
        `module` and `registered_name` that serialize_keras_object adds."""
        return isinstance(value, dict) and isinstance(value.get("class_name"), str) and \
            set(value) <= {"class_name", "config", "module", "registered_name"}

    @property
    def names(self) -> list[str]:
        return [*self.args, *self.aliases]

    def entry_type(self) -> Any:
        """The pydantic type of one entry: a union discriminated by the entry's name."""
        # each member validates with its model, made the first time a config names it: a
        # union of every model would build them all at import
        members = [Annotated[Any, LazyEntry(name, functools.partial(self.entry_model, name)),
                             Tag(name)] for name in self.names]
        if self.custom_args is not None:
            members.append(Annotated[
                Any, LazyEntry(None, functools.partial(self.entry_model, CUSTOM)), Tag(CUSTOM)])
        custom_allowed = self.custom_args is not None

        def tag_of(value: Any) -> str | None:
            if isinstance(value, dict) and len(value) == 1:
                name = next(iter(value))
                return CUSTOM if custom_allowed and isinstance(name, str) and is_custom(name) \
                    else name
            if isinstance(value, CustomEntry):
                return CUSTOM
            if isinstance(value, BaseModel):
                return next(iter(type(value).model_fields))
            return None

        def expand(value: Any) -> Any:
            if isinstance(value, str):
                return {self.spelled(value): {}}
            if self.is_serialized(value):
                return {self.spelled(value["class_name"]): value.get("config") or {}}
            if isinstance(value, dict) and isinstance(value.get("type"), str):
                rest = {k: v for k, v in value.items() if k != "type"}
                # Keras-style {type: dense, units: 10}, or {type: Dense, ...}
                return expand({value["type"]: rest})
            if isinstance(value, dict) and len(value) == 1:
                (name, args), = value.items()
                if self.spelled(name) != name:
                    return expand({self.spelled(name): args})
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


class LazyEntry:
    """A union member validated by `model()`, a model made on first use (`name`: the key
    it has, None for a user's `module:Class` entry)."""

    def __init__(self, name: str | None, model: Callable[[], type[BaseModel]]) -> None:
        self.name, self.model = name, model

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        def validate(value: Any, info: ValidationInfo) -> Any:
            return self.model().model_validate(value, context=info.context)

        return core_schema.with_info_plain_validator_function(validate)

    def __get_pydantic_json_schema__(self, schema: Any, handler: Any) -> Any:
        # the model's own schema, as a definition (`nntrain schema` rewrites those)
        return handler.generate_json_schema.generate_inner(self.model().__pydantic_core_schema__)


def lazy_entry(annotation: Any) -> LazyEntry | None:
    """The LazyEntry an annotation is (a union member made by `Registry.entry_type`), if any."""
    if typing.get_origin(annotation) is not Annotated:
        return None
    return next((m for m in annotation.__metadata__ if isinstance(m, LazyEntry)), None)


def snake_case(name: str) -> str:
    """Keras's class names as its snake_case identifiers: MaxNorm -> max_norm, L1L2 -> l1l2,
    Conv2D -> conv2d."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def entry_name(entry: BaseModel) -> str:
    """The name an entry was written with (`mse` stays `mse`; `my_layers:Gated` for user code)."""
    if isinstance(entry, CustomEntry):
        return entry.target
    return next(iter(type(entry).model_fields))


def entry_args(entry: BaseModel) -> Args:
    if isinstance(entry, CustomEntry):
        return entry.args
    return getattr(entry, entry_name(entry))
